"""Inference requests and answers on KServe's V1 and V2 (Open Inference Protocol) JSON protocols.

Owns the one codec (``codec``): request bodies decoded into the model's float32 input matrix with the
same encoding as training, errors that name the field, and answers encoded in the requested protocol.

May import: ``kfloop.store`` and the leaves. Never KServe itself: the servers adapt it.
"""
