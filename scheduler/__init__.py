"""Pipelines: specs, input kinds (``inputs``), jobs and datums. Datums run through a
``DatumExecutor`` (``executor``; ``local_executor`` here), and everything the scheduler keeps
goes through the model's state tables; nothing here touches the store or the HTTP layer.
"""
