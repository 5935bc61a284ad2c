"""The public JSON of the REST APIs, written once for every service that renders it.

The edge's REST routes answer with these shapes and the status service's webhook
dispatcher POSTs the very same JSON for a generation. Pure functions, no I/O: the caller passes the image
URLs (presigned by storage) or the base64 images in the order of `generation.images`.

- `presenters.generation`: what every shape shares (state names, the error of a finished
  generation, micros -> USD, timestamps);
- `presenters.v2`: the /api/v2/generate object and the webhook headers;
- `presenters.mj`: the Midjourney proxy task;
- `presenters.openai`: OpenAI's ImagesResponse and streaming events;
- `presenters.catalog`: the models, prices and usage of /v1/models, /api/v2/price, /api/v2/usage.
"""
