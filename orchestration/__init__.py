"""Pantheon's orchestration core: plain Python, no Django.

The apps hand it frozen dataclasses and get frozen dataclasses back: the LLM gateway on
litellm (and the offline demo provider), mode planning, the manager routing contract, the
summary extraction contract, the context budget and the metering formula. It never imports
Django or the apps, so it is tested without a database. Submodules are imported explicitly;
this package imports nothing so that importing it stays cheap.
"""
