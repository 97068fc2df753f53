"""Outside sources: one module per kind of feed, each with payload structs, one decoder, a
`fetch` that only does HTTP and a pure `parse`; `runner.py` does everything else for all of them.
"""
