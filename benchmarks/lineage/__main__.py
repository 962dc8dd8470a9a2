from benchmarks.lineage.run import main

main()
