"""Adapters that let other HTTP libraries' APIs run over aiopool's connection pool.

Each lives in its own module and imports its library there, so importing `aiopool` never needs
any of them: `aiopool.integrations.httpx` needs `pip install aiopool[httpx]`.
"""
