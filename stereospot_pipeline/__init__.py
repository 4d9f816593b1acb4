"""stereospot: 2D to stereo 3D video conversion as a Dagster asset pipeline."""

__version__ = "0.1.0"
