"""The `audiorouter` command: joins textrouter, toolcache and reasoner (the only package that may)."""
