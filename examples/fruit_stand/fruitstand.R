#!/usr/bin/env Rscript
# The seed's fruit-stand pipeline in R: filter the sales by fruit, then sum each group.
#
#   Rscript fruitstand.R SALES [OUT]
#
# SALES holds "fruit amount" lines: /pfs/data/sales inside a pipeline, or
# /pfs/data/master/sales (any commit: /pfs/data/<commit-id>/sales) straight from the mount.
# With OUT (a pipeline's /pfs/out), each fruit gets a file there holding its total, as the
# shell pipelines' `sum` writes it; without OUT, the totals are printed as "fruit total" lines.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1 || length(args) > 2) {
  message("usage: Rscript fruitstand.R SALES [OUT]")
  quit(status = 2)
}

sales <- if (file.size(args[1]) == 0) {
  data.frame(fruit = character(), amount = numeric())
} else {
  read.table(args[1], col.names = c("fruit", "amount"),
             colClasses = c("character", "numeric"))
}

for (fruit in sort(unique(sales$fruit))) {
  amounts <- sales$amount[sales$fruit == fruit]        # filter by fruit ...
  total <- format(sum(amounts), scientific = FALSE, digits = 15)  # ... then sum
  if (length(args) == 2) {
    writeLines(total, file.path(args[2], fruit))
  } else {
    cat(fruit, total, "\n", sep = c(" ", ""))
  }
}
