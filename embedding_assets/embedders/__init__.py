"""embedders"""
