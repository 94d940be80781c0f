FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir . \
 && useradd --system --no-create-home segments \
 && mkdir /data && chown segments /data
# not root: a compromised service gets an unprivileged user
USER segments
# inside the container only; compose.yaml publishes the ports on 127.0.0.1 by default
ENV SEGMENTS_HOST=0.0.0.0 SEGMENTS_DATA_DIR=/data
EXPOSE 8001 8002 8003
CMD ["segments", "--help"]
