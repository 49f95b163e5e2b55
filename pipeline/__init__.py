"""vilactl.pipeline"""
