"""The os-ken application: OpenFlow events in, model events out. The only sdnctl module that talks
to switches. It never blocks inside a handler (os-ken's queue holds 128 events, then every switch
stalls): it translates and hands each event to ``publish``, which only enqueues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from netmodel import events as ev
from netmodel.ids import PortNo, SwitchId, format_dpid
from netmodel.types import Port

LOG = logging.getLogger("edgectl.sdnctl.openflow")

Publish = Callable[[ev.Event], Any]


def port_from_ofp(desc: Any) -> Port:
    ofp = ofproto_v1_3
    up = not (desc.state & ofp.OFPPS_LINK_DOWN) and not (desc.config & ofp.OFPPC_PORT_DOWN)
    name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else str(desc.name)
    return Port(no=PortNo(desc.port_no), name=name, hw_addr=str(desc.hw_addr), up=up)


class FabricApp(app_manager.OSKenApp):  # type: ignore[misc]
    """Tracks switches and ports. Constructed by os-ken's AppManager with ``edgectl_publish``."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(
        self, *args: Any, edgectl_publish: Publish, edgectl_clock: Callable[[], float] = time.time, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.name = "edgectl_fabric"
        self._publish = edgectl_publish
        self._clock = edgectl_clock
        self._lock = threading.Lock()
        self.datapaths: dict[SwitchId, Any] = {}

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, event: Any) -> None:
        datapath = event.datapath
        if datapath.id is None:
            return  # died before the handshake finished: the model never knew it
        dpid = SwitchId(datapath.id)
        if event.state == MAIN_DISPATCHER:
            with self._lock:
                self.datapaths[dpid] = datapath
            ports = tuple(
                port_from_ofp(desc) for no, desc in sorted(datapath.ports.items()) if no <= ofproto_v1_3.OFPP_MAX
            )
            LOG.info("switch %s connected from %s with %d ports", format_dpid(dpid), datapath.address, len(ports))
            self._publish(ev.SwitchConnected(dpid, ports, self._clock()))
        elif event.state == DEAD_DISPATCHER:
            with self._lock:
                # A switch that reconnected quickly has a new datapath: the old one's death is old news.
                if self.datapaths.get(dpid) is not datapath:
                    return
                del self.datapaths[dpid]
            LOG.info("switch %s disconnected", format_dpid(dpid))
            self._publish(ev.SwitchDisconnected(dpid, self._clock()))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, event: Any) -> None:
        msg = event.msg
        ofp = msg.datapath.ofproto
        dpid = SwitchId(msg.datapath.id)
        if msg.desc.port_no > ofproto_v1_3.OFPP_MAX:
            return
        if msg.reason == ofp.OFPPR_DELETE:
            self._publish(ev.PortDeleted(dpid, PortNo(msg.desc.port_no)))
        else:
            self._publish(ev.PortStatusChanged(dpid, port_from_ofp(msg.desc)))
