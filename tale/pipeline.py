"""The main job, ``tale run``: the whole TALE loop in one run directory.

Stages, each skipped when its output is already complete, so rerunning the same command resumes:

1. ``records/``: budget search on the training questions (``data_builder``; resumes per question);
2. ``predictor/``: the BERT regressor trained on the searched budgets, calibrated (split conformal) on
   a share of them kept out of its training;
3. ``predictor-onnx/``: its ONNX export, fp32 and int8, the calibration pinned in its manifest;
4. ``reasoner-sft/`` (optional): budget-conditioned LoRA SFT of the reasoner on the records;
5. ``eval/``: vanilla CoT against budget-aware reasoning with the int8 regressor's budgets at the risk
   asked (budgets calibrated to suffice for 1 - risk of the questions), on questions the search never
   saw, for the base reasoner (and the SFT one); resumes per question.

``config.json`` holds the run's settings; a rerun with other settings is refused, because the stages
already on disk would not match them. The risk is the exception: it only picks the evaluated budgets,
so a rerun at another risk keeps every finished stage and adds its own evaluation runs.

With success curves (``ladder`` set: ``tale run --search ladder``) the stages are instead:

1. ``ladder/``: every training question asked at every rung of the ladder, one answer each (``data_builder.ladder``);
2. ``curves/``: TF-IDF success curves, P(correct) and expected output tokens per rung, with the price per token
   chosen on the ``calibration`` share of the ladder questions (``tale.eval.frontier.fit_priced``), in ``policy.json``;
3. ``eval/``: vanilla CoT against the price policy's budgets (0: the direct prompt), as stage 5 above.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_builder.ladder import LadderError, Rung, check_ladder, rung_name
from data_builder.run_dir import RunMismatchError, check_identity, write_meta  # noqa: F401  (RunMismatchError re-exported)
from data_builder.search import SearchConfig
from data_builder.sources import GENERATED_KINDS
from predictor.bert import BertRegressorConfig
from predictor.target import as_json
from reasoner.backends import MAX_NEW_TOKENS
from reasoner.errors import ConfigError, InputError, TaleError
from reasoner.train_log import log_file

if TYPE_CHECKING:
    from data_builder.build import BuildConfig
    from data_builder.ladder import LadderBuildConfig
    from data_builder.record import BudgetRecord
    from tale.eval.evaluate import EvalConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TRAIN_LOG = "train.log"  # the trainers' loss lines, kept off the console
RERUN_SETTINGS = ("risk",)  # settings a rerun may change: they touch no finished stage
# Generated problem i is drawn from seed + i: evaluation seeds this far from the training seed share no draws.
EVAL_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class PipelineConfig:
    """One end-to-end run (`tale run`); its time on the defaults is in docs/results/main-job.md."""

    out: Path = Path("runs/pipeline")
    dataset: str = "arithmetic"  # training questions for the budget search, KIND[:PATH]
    eval_dataset: str | None = None  # None: the same generator with seed + EVAL_SEED_OFFSET (generated kinds only)
    questions: int = 48  # questions searched (enough that the calibration split can hold the 4 feasible ones risk 0.2 needs)
    eval_questions: int = 32  # questions evaluated per configuration
    seed: int = 0  # shuffles (or, for generated problems, generates) the training questions
    # The reasoner, held once: the search and the evaluation ask the same one (two stage configs could disagree).
    model: str = "default"
    backend: str = "hf"  # the engine's identity (``EngineOptions.identity`` on the command line)
    temperature: float = 0.0  # the reasoner's sampling temperature (0: greedy), in the search and the evaluation
    search: SearchConfig = field(default_factory=lambda: SearchConfig(mode="elastic"))
    pool: int = 16  # questions in flight during the search
    # The regressor's own settings, composed: its seed is the run's (``regressor_config``).
    regressor: BertRegressorConfig = field(default_factory=BertRegressorConfig)
    min_feasible: int = 8  # fewer feasible records: the regressor also learns from infeasible ones
    calibration: float = 0.4  # share of the searched questions (by id) kept out of the regressor's training to calibrate it
    risk: float | None = 0.2  # evaluate budgets calibrated to suffice for 1 - risk of questions; None: uncalibrated
    post_train: bool = False  # also LoRA-SFT the reasoner and evaluate it
    sft_epochs: float = 3.0
    max_new_tokens: int = MAX_NEW_TOKENS  # per answer in the evaluation
    # Success curves instead of the budget search: the ladder's rungs (0: direct, None: vanilla CoT), one answer each;
    # the curves' validation share is ``calibration``. None: the budget search and the regressor.
    ladder: tuple[Rung, ...] | None = None

    def __post_init__(self) -> None:
        if self.questions < 1 or self.eval_questions < 1:
            raise ConfigError(f"questions and eval_questions must be >= 1, got {self.questions}, {self.eval_questions}")
        if self.eval_dataset is None and self.dataset.split(":")[0] not in GENERATED_KINDS:
            raise ConfigError("give an evaluation data set (eval_dataset) that does not overlap the training one")
        if not 0 <= self.calibration < 1:
            raise ConfigError(f"calibration must be a share in [0, 1), got {self.calibration}")
        if self.risk is not None and not 0 < self.risk < 1:
            raise ConfigError(f"risk must be in (0, 1), got {self.risk}")
        if self.risk is not None and not self.calibration:
            raise ConfigError("a risk needs a calibration share above 0 (or no risk: uncalibrated budgets)")
        if self.post_train and self.backend == "openai":
            raise ConfigError("post-training needs a local model (backend ort or hf)")
        if self.ladder is not None:
            try:
                check_ladder(self.ladder)
            except LadderError as error:
                raise ConfigError(str(error)) from None
            if self.post_train:
                raise ConfigError("post-training learns from budget-search records: run it without the ladder (success curves)")
            if not self.calibration:
                raise ConfigError("success curves choose their price per token on a share of the ladder questions: "
                                  "give a calibration share above 0")

    def build_config(self) -> BuildConfig:
        """Stage 1's settings: the budget search on the training questions."""
        from data_builder.build import BuildConfig

        return BuildConfig(dataset=self.dataset, out=self.paths()["records"], model=self.model, backend=self.backend,
                           search=self.search, limit=self.questions, seed=self.seed, pool=self.pool, temperature=self.temperature)

    def ladder_config(self, batch_size: int | None) -> LadderBuildConfig:
        """Stage 1's settings with success curves: one answer per rung, at the run's temperature; ``batch_size``: the
        engine's static batch (ort, hf)."""
        from data_builder.ladder import LadderBuildConfig, LadderConfig, ladder_batching

        assert self.ladder is not None
        return LadderBuildConfig(dataset=self.dataset, out=self.paths()["ladder"], model=self.model, backend=self.backend,
                                 ladder=LadderConfig(rungs=self.ladder, samples=1, max_new_tokens=self.max_new_tokens),
                                 limit=self.questions, seed=self.seed, pool=self.pool,
                                 **ladder_batching(self.backend.split(":")[0], batch_size), temperature=self.temperature)

    def regressor_config(self) -> BertRegressorConfig:
        """Stage 2's settings: the regressor's, with the run's seed."""
        return replace(self.regressor, seed=self.seed)

    def eval_config(self) -> EvalConfig:
        """Stage 5's base settings (the grid adds models, methods and the budget source)."""
        from tale.eval.evaluate import EvalConfig

        dataset, seed = self.eval_spec
        return EvalConfig(dataset=dataset, out=self.paths()["evaluate"], backend=self.backend, limit=self.eval_questions, seed=seed,
                          max_new_tokens=self.max_new_tokens, temperature=self.temperature)

    @property
    def eval_spec(self) -> tuple[str, int]:
        """The evaluation data set and its seed."""
        if self.eval_dataset is None:
            return self.dataset.split(":")[0], self.seed + EVAL_SEED_OFFSET
        return self.eval_dataset, self.seed

    def paths(self) -> dict[str, Path]:
        return {"records": self.out / "records", "predictor": self.out / "predictor",
                "export": self.out / "predictor-onnx", "post-train": self.out / "reasoner-sft", "evaluate": self.out / "eval",
                "ladder": self.out / "ladder", "curves": self.out / "curves"}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["regressor"] = {k: v for k, v in as_json(self.regressor).items() if k != "seed"}  # its seed is the run's
        data["ladder"] = None if self.ladder is None else [rung_name(r) for r in self.ladder]
        return data

    def identity(self) -> dict[str, Any]:
        """What the stages on disk depend on: every setting but those a rerun may change."""
        return {k: v for k, v in self.to_json().items() if k not in RERUN_SETTINGS}

    @property
    def budget_source(self) -> str:
        """The evaluated estimator's name: the int8 export, at the risk where one is asked."""
        source = f"onnx:{self.paths()['export']}"
        return source if self.risk is None else f"{source}%{self.risk:g}"


@dataclass
class PipelineResult:
    paths: dict[str, Path]
    skipped: list[str]  # stages found complete
    records: dict[str, Any]  # the search summary (with success curves: the ladder's per rung)
    estimator: dict[str, Any]  # what stage 2 fitted: the regressor's examples, or the success curves' policy and counts
    table: Path
    plot: Path
    summaries: list[dict[str, Any]]


Progress = Callable[[str, int | None], Any]  # (stage description, total) -> a tqdm-like bar


def _check_config(config: PipelineConfig) -> None:
    path = config.out / CONFIG_FILE
    check_identity(path, config.identity())
    if not path.exists():
        config.out.mkdir(parents=True, exist_ok=True)
        write_meta(path, {"identity": config.identity()})


class OverlapError(TaleError, ValueError):
    """The evaluation questions include training questions."""


def check_disjoint(config: PipelineConfig) -> None:
    """Refuse evaluation problems that are also training problems, by id or by question text
    (spacing and case aside). The training problems are the searched records where the search is
    complete, else the training data set."""
    from data_builder.records import load_records
    from data_builder.sources import load_problems

    if config.ladder is not None:
        from data_builder.ladder import load_ladder

        records = config.paths()["ladder"]
        searched: list[Any] = load_ladder(records) if records.exists() else []
    else:
        records = config.paths()["records"]
        searched = load_records(records) if records.exists() else []
    if len(searched) >= config.questions:
        train = [(r.id, r.question) for r in searched]
    else:
        train = [(p.id, p.question) for p in load_problems(config.dataset, limit=config.questions, seed=config.seed,
                                                           split="train")]
    dataset, seed = config.eval_spec
    test = load_problems(dataset, limit=config.eval_questions, seed=seed, split="test")
    texts = {" ".join(question.split()).lower() for _, question in train}
    ids = {problem_id for problem_id, _ in train}
    shared = [p for p in test if p.id in ids or " ".join(p.question.split()).lower() in texts]
    if shared:
        raise OverlapError(f"{len(shared)} of the {len(test)} evaluation problems ({dataset}) are training problems "
                           f"({config.dataset}), first: {shared[0].id}; evaluate on other questions")


def run_pipeline(config: PipelineConfig, backend_for: Callable[[str], Any], progress: Progress,
                 echo: Callable[[str], None] = print, threads: int | None = None) -> PipelineResult:
    """Run (or resume) every stage; ``backend_for(model)`` gives a (cached) reasoner backend; ``threads``, the engine's
    CPU threads, goes into the ladder's call log."""
    from data_builder.build import build_records, summarize
    from data_builder.records import load_records

    _check_config(config)
    check_disjoint(config)
    if config.ladder is not None:
        return _run_curves(config, backend_for, progress, echo, threads)
    paths, skipped = config.paths(), []

    # 1. budget search
    records = load_records(paths["records"]) if paths["records"].exists() else []
    if len(records) >= config.questions:
        skipped.append("records")
    else:
        build = config.build_config()
        with progress("1/5 budget search", config.questions) as bar:
            bar.update(len(records))
            build_records(build, backend_for(config.model), on_record=lambda _: bar.update(1))
        records = load_records(paths["records"])
    search = summarize(records)
    echo(f"records: {search['questions']} questions, {search.get('feasible_share', 0):.0%} feasible"
         + (f", mean searched budget {search['mean_budget']:.0f} against {search['mean_vanilla_tokens_feasible']:.0f} "
            "vanilla tokens" if "mean_budget" in search else ""))

    # 2. the regressor
    examples = _train_regressor(config, paths, records, progress, skipped)
    # 3. ONNX export
    _export(paths, progress, skipped)
    # 4. optional post-training
    models = [config.model]
    if config.post_train:
        _post_train(config, paths, records, progress, skipped)
        models.append(str(paths["post-train"]))
    # 5. evaluation
    _check_calibration(config, examples)
    files, summaries = _evaluate(config, paths, models, backend_for, progress, config.budget_source)
    return PipelineResult(paths=paths, skipped=skipped, records=search, estimator=examples,
                          table=files.markdown, plot=files.plot, summaries=summaries)


CURVE_POLICY_FILE = "policy.json"  # in curves/: the chosen policy, written last (the stage is complete when it exists)


def _run_curves(config: PipelineConfig, backend_for: Callable[[str], Any], progress: Progress,
                echo: Callable[[str], None], threads: int | None) -> PipelineResult:
    """The stages with success curves: ladder labels, TF-IDF curves with their price, evaluation."""
    import json

    from data_builder.ladder import build_ladder, load_ladder, summarize_ladder
    from predictor.curves import CurveData
    from tale.eval.frontier import fit_priced

    paths, skipped = config.paths(), []
    # 1. ladder labels
    records = load_ladder(paths["ladder"]) if paths["ladder"].exists() else []
    if len(records) >= config.questions:
        skipped.append("ladder")
    else:
        backend = backend_for(config.model)
        engine = getattr(backend, "config", None)
        threads = threads or getattr(engine, "threads", None)  # ort's default: every core
        build = config.ladder_config(getattr(engine, "batch_size", None))
        with progress("1/3 ladder labels", config.questions) as bar:
            bar.update(len(records))
            build_ladder(build, [(build.seeds[0], backend)], on_record=lambda _: bar.update(1), threads=threads)
        records = load_ladder(paths["ladder"])
    rows = summarize_ladder(records)
    echo(f"ladder: {len(records)} questions; accuracy (mean output tokens) per rung: "
         + ", ".join(f"{r['rung']} {r['accuracy']:.0%} ({r['mean_output_tokens']:.0f})" for r in rows))

    # 2. success curves and their price
    policy_file = paths["curves"] / CURVE_POLICY_FILE
    if policy_file.exists():
        skipped.append("curves")
        chosen = json.loads(policy_file.read_text())
    else:
        with progress("2/3 success curves (TF-IDF) and their price", None):
            model, policy, counts = fit_priced(CurveData.of(records), config.calibration)
            model.save(paths["curves"])
            chosen = {"policy": str(policy), **counts}
            write_meta(policy_file, chosen)
    source = f"{chosen['policy']}:{paths['curves']}"

    # 3. evaluation
    # the price policy asks 0 (direct) and vanilla CoT too: a constant at its mean numeric budget is not its spend
    files, summaries = _evaluate(config, paths, [config.model], backend_for, progress, source, stage="3/3", matched=False)
    return PipelineResult(paths=paths, skipped=skipped, records={"questions": len(records), "rungs": rows},
                          estimator=chosen, table=files.markdown, plot=files.plot, summaries=summaries)


def _train_regressor(config: PipelineConfig, paths: dict[str, Path], records: list[BudgetRecord], progress: Progress,
                     skipped: list[str]) -> dict[str, Any]:
    from predictor import META_FILE
    from predictor.bert import train_regressor
    from predictor.data import ExampleConfig
    from predictor.target import RegressorMeta

    out = paths["predictor"]
    if (out / META_FILE).exists():
        skipped.append("predictor")
        return _examples_used(RegressorMeta.load(out))
    feasible = sum(1 for r in records if r.feasible)
    include_infeasible = feasible < config.min_feasible
    if include_infeasible:
        logger.warning("only %d feasible records (< %d): the regressor also learns from infeasible ones, "
                       "with their vanilla tokens as budgets", feasible, config.min_feasible)
    with progress("2/5 train the regressor", None), log_file(config.out / TRAIN_LOG, "predictor.bert"):
        if config.calibration and not _calibration_split(paths, include_infeasible, config.calibration):
            raise InputError(f"--calibration {config.calibration:g} keeps none of the {len(records)} searched records "
                             "out of training to calibrate on: search more --questions, raise --calibration, "
                             "or use --calibration 0 --risk none (uncalibrated budgets), in a new --out")
        model = train_regressor([paths["records"]], out, config.regressor_config(),
            ExampleConfig(include_infeasible=include_infeasible, held_out_fraction=0.0,
                          calibration_fraction=config.calibration))
    return _examples_used(model.meta)


def _calibration_split(paths: dict[str, Path], include_infeasible: bool, fraction: float) -> list[Any]:
    from predictor.data import ExampleConfig, load_examples, three_way_split

    return three_way_split(load_examples([paths["records"]], ExampleConfig(include_infeasible=include_infeasible)),
                           0.0, fraction)[1]


def _check_calibration(config: PipelineConfig, examples: dict[str, Any]) -> None:
    """Refuse, before evaluating, a risk that the regressor's calibration split is too small for."""
    from predictor.calibrate import records_needed

    if config.risk is None:
        return
    n, needed = examples.get("calibration", 0), records_needed(config.risk)
    if n < needed:
        smallest = next(a / 100 for a in range(1, 100) if records_needed(a / 100) <= n) if n else None
        raise InputError(f"the regressor was calibrated on {n} records and risk {config.risk:g} needs {needed}: "
                         + (f"rerun with --risk {smallest:g} or higher (the finished stages are kept), " if smallest else "")
                         + "or search more --questions in a new --out")


def _examples_used(meta: Any) -> dict[str, Any]:
    """What a regressor (its ``RegressorMeta``) was trained on."""
    return {"n_train": meta.n_train, "n_validation": meta.n_validation, **meta.data}


def _export(paths: dict[str, Path], progress: Progress, skipped: list[str]) -> None:
    from export.manifest import MANIFEST_FILE
    from export.onnx import ExportConfig, export_regressor

    if (paths["export"] / MANIFEST_FILE).exists():
        skipped.append("export")
        return
    with progress("3/5 export to ONNX int8", None):
        export_regressor(paths["predictor"], paths["export"], ExportConfig(int8=True))


def _post_train(config: PipelineConfig, paths: dict[str, Path], records: list[BudgetRecord], progress: Progress,
                skipped: list[str]) -> None:
    from reasoner.post_train import RUN_CONFIG, PostTrainConfig, post_train, trainer_args

    out = paths["post-train"]
    if (out / RUN_CONFIG).exists():
        skipped.append("post-train")
        return
    if out.exists():  # an interrupted save: training does not resume mid-way, so start it again
        shutil.rmtree(out)
    with progress("4/5 post-train the reasoner (LoRA SFT)", None), log_file(config.out / TRAIN_LOG, "reasoner.post_train"):
        post_train("sft", records, out, PostTrainConfig(model=config.model),
                   trainer_args("sft", num_train_epochs=config.sft_epochs, seed=config.seed),
                   source=[str(paths["records"])])


def method_label(budget_source: str | None, rows: Sequence[Any] = ()) -> str:
    """The closing table's words for a run: vanilla CoT, the success curves' price policy, the regressor's budgets
    at their risk, or the constant at the regressor's mean budget (read from its ``rows``)."""
    if budget_source is None:
        return "vanilla CoT"
    if budget_source.startswith("matched:"):
        return f"budget-aware, one constant budget{f' of {rows[0].budget}' if rows else ''} (the regressor budgets' mean)"
    if budget_source.startswith("price="):
        return f"budget-aware, success-curve budgets at price {budget_source.partition('=')[2].partition(':')[0]} per token"
    _, _, risk = budget_source.partition("%")
    if not risk:
        return "budget-aware, ONNX regressor budgets (uncalibrated)"
    return f"budget-aware, ONNX regressor budgets calibrated to suffice for {1 - float(risk):.0%} (risk {risk})"


def _evaluate(config: PipelineConfig, paths: dict[str, Path], models: list[str], backend_for: Callable[[str], Any],
              progress: Progress, budget_source: str, stage: str = "5/5", matched: bool = True):
    """Vanilla CoT and ``budget_source`` for each model on the evaluation questions; with ``matched``, also one constant
    budget at the mean of ``budget_source``'s budgets (``matched:RUN_DIR``): the learned budgets against a constant
    at equal mean budget, on the same questions."""
    from tale.eval.ablate import AblationConfig, ablate, collect_all
    from tale.eval.paired import paired
    from tale.eval.runs import load_rows

    base = config.eval_config()
    grid = AblationConfig(base=base, datasets=(base.dataset,), models=tuple(models), methods=("vanilla", "budget"),
                          budget_sources=(budget_source,))
    runs = grid.configs()
    learned = next(r for r in runs if r.method == "budget")  # the first model's; its budgets are every model's
    constant = replace(grid, methods=("budget",), budget_sources=(f"matched:{learned.run_dir}",)) if matched else None
    total = len(runs) + (len(constant.configs()) if constant else 0)
    done = sum(len(load_rows(r.run_dir)) for r in runs + (constant.configs() if constant else []))
    with progress(f"{stage} evaluate", total * config.eval_questions) as bar:
        bar.update(done)
        files = ablate(grid, backend_for, on_row=lambda _: bar.update(1))
        if constant:  # after the learned budgets' run: its mean budget is the constant
            files = ablate(constant, backend_for, on_row=lambda _: bar.update(1))
    order = ("vanilla", "learned", "matched")
    results = sorted(collect_all(paths["evaluate"]),
                     key=lambda r: (models.index(r.config.model) if r.config.model in models else len(models),
                                    order.index(_arm(r.config.budget_source)), r.config.budget_source or ""))
    summaries = [{"model": r.config.model, "method": method_label(r.config.budget_source, r.rows), **asdict(r.summary)}
                 for r in results]
    vanilla = {r.config.model: r for r in results if r.config.budget_source is None}
    # a constant's run, by its model and the budget source it matches (a rerun at another risk adds a pair); the run it
    # names is the first model's, whose budgets every model was given
    by_name = {r.run_dir.name: r for r in results}
    matches = {(r.config.model, learned.config.budget_source): r for r in results if _arm(r.config.budget_source) == "matched"
               and (learned := by_name.get(Path(r.config.budget_source.partition(":")[2]).name)) is not None}

    def rows_of(result) -> dict[str, Any]:
        return {row.id: row for row in load_rows(result.run_dir)}

    for summary, r in zip(summaries, results):
        model, arm = r.config.model, _arm(r.config.budget_source)
        if arm != "vanilla" and model in vanilla:
            summary["against_vanilla"] = paired(rows_of(r), rows_of(vanilla[model])).to_json()
        if arm == "learned" and (constant_run := matches.get((model, r.config.budget_source))) is not None:
            summary["against_matched"] = {**paired(rows_of(r), rows_of(constant_run)).to_json(),
                                          "accuracy": constant_run.summary.accuracy,
                                          "mean_output_tokens": constant_run.summary.mean_output_tokens}
    return files, summaries


def _arm(budget_source: str | None) -> str:
    """Which arm of the evaluation a run is: vanilla CoT, the learned budgets, or the constant matched to them."""
    if budget_source is None:
        return "vanilla"
    return "matched" if budget_source.startswith("matched:") else "learned"
