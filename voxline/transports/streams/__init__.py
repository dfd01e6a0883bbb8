"""WebSocket media streams: telephony platforms and media servers that stream a
call's audio to voxline and play back what it returns.

``wire`` is what every stream shares without I/O (events, the ``Dialect``
contract, close codes); ``transport`` is the ``Transport`` over one socket;
``door`` runs a stream from its upgrade to its end. Each platform is one small
dialect module beside them (``raw``, ``twilio``, ...), registered as a door in
``voxline.transports.DOORS``.
"""
