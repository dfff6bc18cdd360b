FROM busybox
WORKDIR /
COPY . ./
CMD []
