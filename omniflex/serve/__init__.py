"""Serving: an OpenAI-compatible REST API, the Realtime speech-to-speech websocket, and a voice
web page, over one ``Assistant`` (see ``DESIGN.md``, "Serving").

``create_app(assistant, settings)`` builds the FastAPI app; ``omniflex serve`` runs it under
uvicorn; ``omniflex bench realtime`` measures it through the official ``openai`` client.
"""

from omniflex.serve.app import create_app
from omniflex.serve.guard import GuardDecision, OutputGuard, make_output_guard
from omniflex.serve.settings import ServeSettings

__all__ = ["GuardDecision", "OutputGuard", "ServeSettings", "create_app", "make_output_guard"]
