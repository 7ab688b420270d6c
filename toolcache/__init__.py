"""toolcache"""
