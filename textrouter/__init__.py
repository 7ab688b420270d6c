"""textrouter"""
