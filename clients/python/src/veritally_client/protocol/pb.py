"""The generated protobuf message and gRPC modules of ``veritally.v1``, under public names.

``from veritally_client.protocol.pb import acta_pb2, ingest_pb2_grpc``. The modules are
generated from ``proto/veritally/v1`` (``make generate``) into the SDK's private ``_gen``
package; this module is their stable name, so that the place the generator writes to can
move without breaking code outside the SDK. Messages only grow (``buf breaking`` holds
it): new fields get new numbers, none is renumbered, renamed or removed.
"""

from veritally_client._gen.veritally.v1 import acta_pb2 as acta_pb2
from veritally_client._gen.veritally.v1 import acta_pb2_grpc as acta_pb2_grpc
from veritally_client._gen.veritally.v1 import aggregation_pb2 as aggregation_pb2
from veritally_client._gen.veritally.v1 import aggregation_pb2_grpc as aggregation_pb2_grpc
from veritally_client._gen.veritally.v1 import election_pb2 as election_pb2
from veritally_client._gen.veritally.v1 import election_pb2_grpc as election_pb2_grpc
from veritally_client._gen.veritally.v1 import ingest_pb2 as ingest_pb2
from veritally_client._gen.veritally.v1 import ingest_pb2_grpc as ingest_pb2_grpc
from veritally_client._gen.veritally.v1 import log_pb2 as log_pb2
from veritally_client._gen.veritally.v1 import log_pb2_grpc as log_pb2_grpc
from veritally_client._gen.veritally.v1 import publication_pb2 as publication_pb2
from veritally_client._gen.veritally.v1 import publication_pb2_grpc as publication_pb2_grpc
from veritally_client._gen.veritally.v1 import results_pb2 as results_pb2
from veritally_client._gen.veritally.v1 import results_pb2_grpc as results_pb2_grpc

__all__ = [
    "acta_pb2",
    "acta_pb2_grpc",
    "aggregation_pb2",
    "aggregation_pb2_grpc",
    "election_pb2",
    "election_pb2_grpc",
    "ingest_pb2",
    "ingest_pb2_grpc",
    "log_pb2",
    "log_pb2_grpc",
    "publication_pb2",
    "publication_pb2_grpc",
    "results_pb2",
    "results_pb2_grpc",
]
