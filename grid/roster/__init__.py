"""The roster (网格员花名册): grid officers synced from the city, and what follows from it.

``store``: the officer rows of a sync page (COPY text with the phone protected, the version-guarded
upsert, the cells each officer serves) and the release of the open cases of an officer who left.
``imports``: a roster a city sends as a spreadsheet (``gridflow officers import``).
"""
