"""Analysis: binned estimates, theoretical FLOPs/bytes and floors, GPU table, savings, recommendations.

Modules import no heavy packages at import time (numpy is imported inside functions).
"""
