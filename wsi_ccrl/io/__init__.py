"""Reading slides and keeping cells: slides and plain images (``slide``, ``plain_image``), their
tissue and tile plan (``tiles``), stain statistics (``stain``), the crop rule (``crops``), CSR
polygons and their maths (``contours``), the per-cell record (``cellrows``), and the zarr cell
store every step hands over (``store``, ``store_lock``)."""
