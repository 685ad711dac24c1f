"""Keep embeddings and local features in step with the gallery: these receivers only enqueue work.

The work itself happens in ``similarity.tasks`` on a django-q2 worker, after the
transaction that changed the photo has committed.
"""

import logging

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from similarity.models import Candidate, EmbeddingStatus, PhotoFeatures, ReferencePhoto
from similarity.search import features, vector_store
from similarity.tasks import enqueue_embedding, enqueue_features, enqueue_vector_sync

logger = logging.getLogger(__name__)


@receiver(post_save, sender=ReferencePhoto, dispatch_uid="similarity_queue_embedding")
def queue_embedding(sender, instance: ReferencePhoto, raw=False, created=False, **kwargs):
    if raw or not instance.is_active:
        return
    photo_id = instance.pk
    if instance.embedding_status == EmbeddingStatus.READY and created and features.enabled():
        # Restored with its vector (import of an export): only its local features are missing.
        transaction.on_commit(lambda: enqueue_features(photo_id), robust=True)
        return
    if instance.embedding_status != EmbeddingStatus.PENDING:
        return
    transaction.on_commit(lambda: enqueue_embedding(photo_id), robust=True)


@receiver(post_save, sender=ReferencePhoto, dispatch_uid="similarity_sync_saved_vector")
@receiver(post_delete, sender=ReferencePhoto, dispatch_uid="similarity_sync_deleted_vector")
def queue_vector_sync(sender, instance: ReferencePhoto, raw=False, **kwargs):
    """On the Milvus backend, a photo deleted, deactivated, moved or restored with its vector is brought in
    step there (a pending one is written by its embedding task). Searches check every hit against the
    database, so the change shows at once even before the task runs."""
    if raw or not vector_store.uses_milvus():
        return
    if kwargs.get("signal") is post_save and instance.embedding_status == EmbeddingStatus.PENDING:
        return
    photo_id = instance.pk
    transaction.on_commit(lambda: enqueue_vector_sync([photo_id]), robust=True)


@receiver(post_delete, sender=ReferencePhoto, dispatch_uid="similarity_delete_files")
@receiver(post_delete, sender=Candidate, dispatch_uid="similarity_delete_candidate_files")
def delete_files(sender, instance, **kwargs):
    """Remove the image file and its thumbnails once the deletion has committed."""
    if not instance.image:
        return
    storage, name = instance.image.storage, instance.image.name

    def remove():
        from similarity.gallery.thumbnails import delete_thumbnails

        delete_thumbnails(name)
        if sender.objects.filter(image=name).exists():
            return
        storage.delete(name)

    transaction.on_commit(remove, robust=True)


@receiver(post_delete, sender=PhotoFeatures, dispatch_uid="similarity_delete_features_file")
def delete_features_file(sender, instance: PhotoFeatures, **kwargs):
    """A photo's local features file goes with its record (a deleted photo takes both along)."""
    name = instance.file
    transaction.on_commit(lambda: default_storage.delete(name), robust=True)


MAINTENANCE_SCHEDULE = "similarity: maintain index"


def ensure_maintenance_schedule(sender, using="default", **kwargs):
    """After migrate (and test flushes): the every-minute index maintenance exists on django-q2."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=MAINTENANCE_SCHEDULE,
        defaults={
            "func": "similarity.tasks.maintain_index",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
