"""Inference requests and answers on KServe's V1 and V2 (Open Inference Protocol) JSON protocols: the
one home of the protocol, for the predictor and the drift transformer.

- ``requests``: request bodies decoded into the model's float32 input matrix with the same encoding
  as training (``RequestDecoder``, errors that name the field), an accepted request's rows by feature
  name, and a request rebuilt from the decoded matrix in the other protocol;
- ``responses``: answers encoded from the model's predictions in either protocol, a predictor's
  answer read back as per-row predictions and converted to the other protocol;
- ``tensors``: the V2 ``Tensor``, its datatypes and values, and the model's V2 metadata.

May import: ``kfloop.schema``, ``kfloop.store`` and the leaves. Never KServe itself: the servers adapt it.
"""
