"""Generated protobuf code for the device wire format (proto/MessageDataPB.proto).

Do not edit the ``*_pb2.py`` files: run ``.venv/bin/python scripts/gen_proto.py``.
"""

from messaging.core.pb.MessageDataPB_pb2 import Message, MessageDataPB

__all__ = ["Message", "MessageDataPB"]
