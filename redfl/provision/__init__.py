"""Provisioning: the ``redfl tree`` command and the folder it writes. No Ray."""

from redfl.provision.folder import FolderError, write_folder
from redfl.provision.tree_cli import register

__all__ = ["FolderError", "register", "write_folder"]
