"""vilactl.curation"""
