"""OpenAI's Responses API on clara-serve: `serving` (create, retrieve, delete, input items; the
file_search tool over vector stores), `protocol` (request and response models), `store` (stored
responses in SQLite, for `previous_response_id`), `stream` (the event stream of one response).
"""
