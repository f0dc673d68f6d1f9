"""Reports: the paper's figures and tables for a results store, as PNG + CSV and one HTML page.

    from tokenjoule.report.build import build_report
    result = build_report(store, "report/", traces=["azure-conv-2023"])
    result.index_html  # self-contained page; result.sections: each figure/table or what it misses

Heavy libraries (pandas, matplotlib) are imported inside the functions that draw.
"""
