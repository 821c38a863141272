"""The framework's floor for bench_api.py: a bare Flask endpoint under the same gunicorn settings."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/")
def accept():
    """Parse the JSON body and answer 202, as an imagine does, with no work in between."""
    return jsonify(success=True, received=request.get_json()), 202
