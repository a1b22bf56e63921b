"""``veritally demo`` without its display: a national election night replayed through
the real stack (:mod:`.replay`), watched and verified by a media outlet (:mod:`.media`),
recounted and summarised (:mod:`.night`). The command and its live table are
:mod:`veritally.cli.demo`.
"""
