"""The framework's floor for the API benchmarks: bare Flask endpoints under the same gunicorn settings."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/")
def accept():
    """Parse the JSON body and answer 202, as an imagine does, with no work in between."""
    return jsonify(success=True, received=request.get_json()), 202


@app.get("/jobs/<job_id>")
def job(job_id: str):
    """Answer a job-sized JSON object, as GET /v1/jobs/:id does, with no work in between."""
    return jsonify(
        success=True, job={"id": job_id, "type": "imagine", "status": "succeeded", "progress": 100}
    )
