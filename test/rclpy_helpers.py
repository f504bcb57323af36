"""rclpy test helpers shared by the rclpy and launch tests: a probe node, waiting on conditions, services.

Imported only after the tests' `pytest.importorskip("rclpy")`, so rclpy is imported at the top here.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter, parameter_value_to_python

from wps_sam_ros.dds import LOOPBACK_CONFIG


@contextlib.contextmanager
def probe_node(name: str, domain_id: int | None = None, loopback: bool = True) -> Iterator[Any]:
    """An rclpy node in the test process; `loopback`: the Cyclone discovery setup of node_process children
    (launch tests keep the environment's, which their launched nodes inherit)."""
    if loopback:
        os.environ["CYCLONEDDS_URI"] = LOOPBACK_CONFIG
    rclpy.init(domain_id=domain_id)
    node = rclpy.create_node(name)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()


def spin_until(node, predicate: Callable[[], Any], timeout: float, every: Callable[[], Any] | None = None) -> bool:
    """Spin `node` until `predicate()` holds (calling `every()` each round, e.g. to resend a frame)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return True
    return False


def call(node, srv_type, name: str, request, timeout: float = 30.0):
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
        future = client.call_async(request)
        assert spin_until(node, future.done, timeout), f"{name} did not answer"
        return future.result()
    finally:
        node.destroy_client(client)


def get_parameter(node, target: str, name: str) -> Any:
    reply = call(node, GetParameters, f"{target}/get_parameters", GetParameters.Request(names=[name]))
    return parameter_value_to_python(reply.values[0])


def set_parameter(node, target: str, name: str, value: Any, type_: Parameter.Type | None = None):
    """The SetParametersResult of one parameter (type_ forces e.g. INTEGER for an int sent to a float)."""
    param = Parameter(name, type_, value) if type_ is not None else Parameter(name, value=value)
    request = SetParameters.Request(parameters=[param.to_parameter_msg()])
    return call(node, SetParameters, f"{target}/set_parameters", request).results[0]


def change_state(node, target: str, transition: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    return call(node, ChangeState, f"{target}/change_state", request).success


def lifecycle_state(node, target: str, timeout: float = 30.0) -> int:
    return call(node, GetState, f"{target}/get_state", GetState.Request(), timeout).current_state.id
