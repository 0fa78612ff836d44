"""The dashboard's files (HTML, CSS, JavaScript modules), served by
:mod:`redfl.platform.api.dashboard`."""
