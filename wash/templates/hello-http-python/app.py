"""{{name}}: a wasi:http component in Python that answers every request with a greeting.

`wash build` builds it with componentize-py (`pip install componentize-py`) and signs it;
`wash dev` runs it and swaps in each change.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam

# What every request gets back.
GREETING = "Hello from {{name}}!\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(GREETING.encode())
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
