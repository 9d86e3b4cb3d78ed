"""What operators see of the gateway.

access_log.py     request IDs, one JSON line per request, and the metrics of each, around the app
metrics.py        Prometheus metrics, and the fleet's states read at scrape time
request_facts.py  what a handler learned about a request (object ID, node), for the two above
log_output.py     JSON lines, written in batches
"""
