"""vilactl.catalog"""
