"""soko's ground floor: content-addressed blobs, the image model, layers,
metadata, local images and archives. Imports nothing else of soko's."""
