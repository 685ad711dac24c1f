"""python manage.py runserver: Django's development server (with static files), which loads the encoder and
the index before it says it is ready, so the first lookup does not pay for them (gunicorn does the same in
geolocator/gunicorn.conf.py). --no-warm-up skips it."""

from django.contrib.staticfiles.management.commands.runserver import Command as StaticFilesRunserverCommand

from similarity.warmup import warm_up


class Command(StaticFilesRunserverCommand):
    help = StaticFilesRunserverCommand.help + " Loads the encoder and the index first."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--no-warm-up",
            action="store_false",
            dest="warm_up",
            help="Serve at once, and load the encoder and the index on the first lookup.",
        )

    def get_handler(self, *args, **options):
        # called in the process that serves (the autoreloader's child), just before it binds and says so
        if options.get("warm_up", True):
            self.stdout.write("Loading the encoder and the index...")
            warm_up()
        return super().get_handler(*args, **options)
