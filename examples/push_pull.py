"""Push a training output directory and fetch it back by digest, using the library API.

    python examples/push_pull.py out/model                       # embedded store
    OCIART_REGISTRY=127.0.0.1:5000 python examples/push_pull.py out/model
"""

import sys

import ociart

src = sys.argv[1] if len(sys.argv) > 1 else "."
with ociart.Client() as client:
    desc = client.push("examples/model:latest", [src], annotations={"org.opencontainers.image.source": "examples"})
    print("pushed", desc.digest)
    result = client.pull(f"examples/model@{desc.digest}", "restored-model")
    for f in result.files:
        print(f.digest, f.size, f.path)
