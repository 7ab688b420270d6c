"""`audiorouter serve`: an OpenAI-compatible routing gateway in front of an audio LLM server (vLLM).

Modules, one concept each:
  config.py   GatewayConfig (frozen options, validated) and the upstream URL checks
  parsing.py  OpenAI chat bodies: audio parts, question, choices; the forwarded body
  upstream.py the HTTP client to the upstream (no redirects, its key stays there), error mapping
  metrics.py  Prometheus metrics of one gateway (its own registry)
  batcher.py  micro-batching of concurrent routing calls onto Router.route_batch
  app.py      the Starlette application (routes, auth, limits, decision log)

Like cli/pipeline.py this joins textrouter, toolcache and reasoner (cli is the only package that
may); nothing here imports at package import time.
"""
