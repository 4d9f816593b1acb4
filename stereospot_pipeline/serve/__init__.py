"""The outbox as a VR video library over HTTP (``stereospot serve``)."""
