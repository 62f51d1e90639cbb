"""The HTTP+JSON API: the route table (``endpoint``) that both the server and the OpenAPI
document read, the wire types clients see (``wire``, ``wire_pipelines``), the server over the
daemon's Unix socket and the Python client. It calls the model and the scheduler by their
public operations only; stored records never cross the socket as they are stored.
"""
