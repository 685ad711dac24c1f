"""python manage.py build_clip_index: embed what is missing or stale, then rebuild the index."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity.index import IndexBuildLock, LockHeld
from similarity.index.milvus import MilvusUnavailable
from similarity.runtime.encoders import EncoderUnavailable
from similarity.runtime.registry import target_spec
from similarity.search import embedding, features, maintenance, vector_store
from similarity.search.vectors import get_encoder


class Command(BaseCommand):
    help = (
        "Embed every active photo whose vector is missing or stale (file or encoder changed), "
        "then build and save the FAISS index from the stored vectors (and, on the Milvus backend, write the "
        "encoder's Milvus collection afresh from them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=settings.SIMILARITY_BATCH_SIZE)
        parser.add_argument("--recompute", action="store_true", help="Re-embed every photo, not only stale ones.")
        parser.add_argument("--encoder", help="Encoder spec (default: SIMILARITY_ENCODER).")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, batch_size, recompute, encoder, no_progress, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            chosen = get_encoder(target_spec(encoder)).load()  # fail before touching the index
            started = time.monotonic()
            with IndexBuildLock():
                pending = embedding.photos_needing_embedding(chosen.id, recompute=recompute).order_by("pk")
                total = pending.count()
                self.stdout.write(f"Encoder {chosen.id}: {total} photo(s) to embed.")
                with tqdm(total=total, unit="photo", disable=no_progress or not total, file=self.stderr) as bar:
                    report = embedding.embed_photos(
                        pending.iterator(chunk_size=batch_size * 4), chosen, batch_size=batch_size, on_batch=bar.update
                    )
                manifest = maintenance.rebuild_index(chosen.id)
                in_milvus = vector_store.rebuild(chosen.id) if vector_store.uses_milvus() else None
            feature_report = None
            if features.enabled():  # local features for verification, for photos that lack them
                missing = features.photos_needing_features()
                count = missing.count()
                self.stdout.write(f"Local features: {count} photo(s) to extract.")
                with tqdm(total=count, unit="photo", disable=no_progress or not count, file=self.stderr) as bar:
                    feature_report = features.extract_missing(on_photo=bar.update)
        except EncoderUnavailable as exc:
            raise CommandError(str(exc)) from None
        except (LockHeld, MilvusUnavailable) as exc:
            raise CommandError(str(exc)) from None
        elapsed = time.monotonic() - started
        if manifest.note:
            self.stdout.write(self.style.WARNING(manifest.note))
        for photo_id, error in report.failures:
            self.stdout.write(self.style.WARNING(f"  photo {photo_id} failed: {error}"))
        for photo_id, error in feature_report.failed if feature_report else []:
            self.stdout.write(self.style.WARNING(f"  photo {photo_id}: no local features: {error}"))
        self.stdout.write(
            "\n".join(
                [
                    f"Embedded {report.embedded} photo(s), {report.failed} failed, in {elapsed:.1f}s.",
                    f"Total images in index: {manifest.count}",
                    f"Embedding dimension:   {manifest.dim}",
                    f"Model:                 {manifest.encoder}",
                    f"Device:                {chosen.device} ({chosen.runtime}, {chosen.precision})",
                    f"Runtime:               {chosen.runtime_note}",
                    f"Index type:            {manifest.index_type}",
                    f"Index file:            {manifest.path}",
                ]
            )
        )
        if in_milvus is not None:
            self.stdout.write(
                f"Milvus collection:     {in_milvus} vectors at {settings.SIMILARITY_MILVUS_URI} (answers searches)"
            )
