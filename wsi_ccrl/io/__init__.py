"""Reading slides and keeping cells: slides and plain images (``slide``, ``plain_image``), stain
statistics (``stain``), the crop rule (``crops``), CSR polygons and the per-cell record (``contours``),
and the zarr cell store every step hands over (``store``, ``store_lock``)."""
