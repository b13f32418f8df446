"""How a logged model answers requests, and only that: the code a registered model carries with it.

    limits.py      ServingLimits: what one request may ask (rows, characters, image bytes and pixels, batch size)
    pyfunc.py      ShapCAPyfunc: a DataFrame of rows -> one JSON answer per row, bad rows answered with an error
    packaging.py   log_shapca_model: models from code, the signature and input example, pinned requirements
    model_code.py  the file MLflow runs to load a logged model
    harness.py     a real `mlflow models serve` process on 127.0.0.1, the requests it is sent, the battery it survives

Everything but harness.py travels inside each logged model (packaging.SERVED_PACKAGES), so it imports nothing from
training, tracking or orchestration.
"""
