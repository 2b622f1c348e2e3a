"""sysctl-doctor: will your kernel settings survive the next boot?"""

__version__ = "0.1.0"
