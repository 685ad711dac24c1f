"""The curated gallery of reference photos (its models live in ``similarity/models.py``).

* ``images.py`` -- reading photos safely: accepted formats, bounded decoding, EXIF GPS;
* ``intake.py`` -- adding a photo, the one path every way in uses (admin, bulk upload, API, importer);
* ``importer.py`` -- bulk import from a folder with a CSV of coordinates or the photos' own GPS;
* ``exchange.py`` -- moving a gallery, with its vectors, between installations;
* ``review.py`` -- the review queue: looked-up photos proposed as reference photos;
* ``thumbnails.py`` -- thumbnails through the storage API;
* ``coverage.py`` -- the gallery on a map grid, for the curators' coverage map.
"""
