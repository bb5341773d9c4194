"""Example experiment files, shipped inside the package (``hwnas examples``)."""
