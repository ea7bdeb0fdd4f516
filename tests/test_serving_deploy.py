"""The Docker Compose and Kubernetes files point the official TF Serving image at what the export writes."""

import pathlib

import tensorflow as tf
import yaml

from musicrec.serving.export import BATCHING_PARAMETERS, CONTAINER_BASE_PATH, MODELS_CONFIG

SERVING = pathlib.Path(__file__).resolve().parent.parent / "serving"
EXPECTED_ARGS = {f"--model_config_file={CONTAINER_BASE_PATH}/{MODELS_CONFIG}", "--enable_batching=true",
                 f"--batching_parameters_file={CONTAINER_BASE_PATH}/{BATCHING_PARAMETERS}"}


def test_compose_and_kubernetes_serve_the_exported_base_path_with_the_matching_image():
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())["services"]["tf-serving"]
    manifests = list(yaml.safe_load_all((SERVING / "kubernetes.yaml").read_text()))
    pod = next(m for m in manifests if m["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    tf_release = ".".join(tf.__version__.split(".")[:2])
    for image, args in ((compose["image"], compose["command"]), (container["image"], container["args"])):
        assert image.startswith(f"tensorflow/serving:{tf_release}")
        assert EXPECTED_ARGS <= set(args)
    assert compose["volumes"][0].endswith(f":{CONTAINER_BASE_PATH}:ro")
    assert container["volumeMounts"][0]["mountPath"] == CONTAINER_BASE_PATH
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/cold_start_recommender"
