"""The protocols: operation dispatch, SOAP (spyne), XML-RPC, HTTP and the
Twisted server."""
