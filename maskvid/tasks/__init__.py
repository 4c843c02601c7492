"""Tasks as (known, mask) builders around a Completer: novel views, interpolation, edit propagation.

Library: `nvs.novel_view_synthesis`, `interpolate.interpolate`, `edit.propagate_edit` (arrays in,
arrays out, any object with the Completer's `complete_video`). Commands:
`python -m maskvid.tasks.{nvs,interpolate,edit} --help`.
"""
