"""Drives berth's API with the official Python `kubernetes` client.

Usage: client_check.py KUBECONFIG NAMESPACE SECRET_VALUE

Prints one JSON object per line, {"step": NAME, ...what the client got back}; the Rust test
e2e/tests/python_client.rs checks them. The script itself asserts nothing: it reports what
the client saw, and an exception ends it with a {"step": "error"} line and exit status 1.
"""

import json
import sys
import threading
import traceback

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "berth.dev", "v1alpha1", "stacks"
# Bounds every call, so a server that never answers fails the run instead of hanging it.
TIMEOUT = 60


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def stack(name, image):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Stack",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"services": [{"name": "web", "image": image}]},
    }


def meta(obj):
    m = obj["metadata"]
    return {k: m.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion", "labels")}


def main():
    kubeconfig, ns, secret_value = sys.argv[1], sys.argv[2], sys.argv[3]
    config.load_kube_config(config_file=kubeconfig)
    emit("config", host=client.Configuration.get_default_copy().host)
    objects = client.CustomObjectsApi()
    core = client.CoreV1Api()
    emit("version", gitVersion=client.VersionApi().get_code(_request_timeout=TIMEOUT).git_version)

    created = objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, stack("py-web", "berth-e2e/busybox:1"), _request_timeout=TIMEOUT
    )
    emit("create", metadata=meta(created), spec=created["spec"])

    listed = objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _request_timeout=TIMEOUT)
    emit(
        "list",
        kind=listed["kind"],
        names=[i["metadata"]["name"] for i in listed["items"]],
        resourceVersion=listed["metadata"]["resourceVersion"],
    )

    got = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "py-web", _request_timeout=TIMEOUT)
    emit("get", metadata=meta(got), spec=got["spec"])

    # Watch from the list's resourceVersion in a thread while this one makes changes: the
    # watch must report the new object (ADDED) and the status write (MODIFIED).
    seen = []
    done = threading.Event()
    failure = []

    def watch_stacks():
        w = watch.Watch()
        try:
            for ev in w.stream(
                objects.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                PLURAL,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=TIMEOUT,
            ):
                obj = ev["object"]
                seen.append(
                    {
                        "type": ev["type"],
                        "name": obj["metadata"]["name"],
                        "resourceVersion": obj["metadata"]["resourceVersion"],
                        "phase": (obj.get("status") or {}).get("phase"),
                    }
                )
                names_types = {(s["type"], s["name"]) for s in seen}
                if ("ADDED", "py-second") in names_types and ("MODIFIED", "py-web") in names_types:
                    w.stop()
        except Exception as e:  # reported by the main thread
            failure.append(repr(e))
        finally:
            done.set()

    watcher = threading.Thread(target=watch_stacks, daemon=True)
    watcher.start()
    objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, stack("py-second", "berth-e2e/busybox:1"), _request_timeout=TIMEOUT
    )
    status = {
        "status": {
            "phase": "Ready",
            "hostsReady": "1/1",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllServicesReady", "message": "ok"}],
        }
    }
    patched_status = objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "py-web", status, _request_timeout=TIMEOUT
    )
    emit("patch_status", metadata=meta(patched_status), status=patched_status.get("status"))
    done.wait(TIMEOUT + 10)
    emit("watch", events=seen, finished=done.is_set(), error=failure[0] if failure else None)

    # A merge patch (the client sends application/merge-patch+json for a dict body).
    patched = objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        PLURAL,
        "py-web",
        {"metadata": {"labels": {"tier": "front"}}, "spec": {"services": [{"name": "web", "image": "berth-e2e/busybox:2"}]}},
        _request_timeout=TIMEOUT,
    )
    emit("patch", metadata=meta(patched), spec=patched["spec"], status=patched.get("status"))

    # A replace carrying the resourceVersion read before the patch is stale.
    try:
        objects.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "py-web", got, _request_timeout=TIMEOUT)
        conflict = None
    except ApiException as e:
        conflict = {"status": e.status, "reason": json.loads(e.body).get("reason")}
    emit("stale_replace", error=conflict)

    selected = objects.list_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, label_selector="app=py-second", _request_timeout=TIMEOUT
    )
    emit("label_selector", names=[i["metadata"]["name"] for i in selected["items"]])

    deleted = objects.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "py-web", _request_timeout=TIMEOUT)
    try:
        objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "py-web", _request_timeout=TIMEOUT)
        after = None
    except ApiException as e:
        after = {"status": e.status, "reason": e.reason, "body": json.loads(e.body)}
    emit("delete", response_kind=deleted.get("kind"), get_after=after)

    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="py-secret"), string_data={"password": secret_value}
    )
    created_secret = core.create_namespaced_secret(ns, secret, _request_timeout=TIMEOUT)
    read_secret = core.read_namespaced_secret("py-secret", ns, _request_timeout=TIMEOUT)
    emit(
        "secret",
        created_data=created_secret.data,
        data=read_secret.data,
        type=read_secret.type,
        string_data=read_secret.string_data,
        uid=read_secret.metadata.uid,
    )

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-config", labels={"app": "py"}), data={"mode": "fast"})
    core.create_namespaced_config_map(ns, cm, _request_timeout=TIMEOUT)
    read_cm = core.read_namespaced_config_map("py-config", ns, _request_timeout=TIMEOUT)
    emit("configmap", data=read_cm.data, labels=read_cm.metadata.labels, resourceVersion=read_cm.metadata.resource_version)
    emit("done")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        emit("error", error=repr(e), trace=traceback.format_exc())
        sys.exit(1)
