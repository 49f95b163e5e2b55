"""vilactl.train"""
